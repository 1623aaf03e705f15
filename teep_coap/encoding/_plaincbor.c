/*
 * teep_coap.encoding._plaincbor: is this input "plain deterministic CBOR"?
 *
 * Written by hand because no Python CBOR library checks deterministic encoding on decode (cbor2
 * accepts any head length, indefinite lengths and duplicate keys), and the pure-Python proof, a
 * re-encoding compared with the input, costs as much as decoding itself (one Python call per head).
 *
 * plain(data) is True iff `data` is exactly one CBOR data item (RFC 8949), nothing after it, and
 *   - every head is in preferred serialization (shortest argument) with a definite length;
 *   - it holds no tag (major type 6) and no float;
 *   - its only simple values are false, true, null and undefined (0xf4-0xf7);
 *   - every map has at most MAX_MAP_PAIRS pairs, and its keys are integers or strings (major
 *     types 0-3) with pairwise different encodings;
 *   - it nests at most MAX_DEPTH containers deep.
 * Such an input is what cbor2 decodes and then re-encodes to the very same bytes: each head gives
 * back its own preferred form, a string its own bytes (a text string that is not valid UTF-8 is
 * refused by cbor2 itself), and a map with distinct keys a dict of as many entries in the same order.
 * So for these inputs this check is the determinism proof. False means only "not shown here": the
 * caller then takes its general way, which either accepts the input or names what is wrong.
 *
 * untrusted_ok(data, allowed_tags, max_depth) is the fast answer of encoding.untrusted's
 * check_untrusted_cbor, which walks every input a peer sends before authentication: True iff that
 * walker would accept `data` (one definite-length item of integers, strings, arrays, maps,
 * false/true/null and tags in `allowed_tags`, nested at most `max_depth` deep, nothing after it).
 * The same walk, head by head, in C: the Python walker took ~5 us per signed message on the TAM, a
 * few times per message. False sends the caller to the Python walker, which names what is wrong.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 64
#define MAX_MAP_PAIRS 32

/* One item starting at pos; the offset just after it, or -1 if it is not plain. */
static Py_ssize_t
plain_item(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, int depth)
{
    if (pos >= end)
        return -1;
    const uint8_t initial = d[pos++];
    const int major = initial >> 5;
    const int info = initial & 0x1f;
    if (major == 7)
        return (info >= 20 && info <= 23) ? pos : -1;
    if (major == 6)
        return -1;

    uint64_t arg;
    if (info < 24) {
        arg = (uint64_t)info;
    } else if (info == 24) {
        if (end - pos < 1)
            return -1;
        arg = d[pos];
        pos += 1;
        if (arg < 24)
            return -1;
    } else if (info == 25) {
        if (end - pos < 2)
            return -1;
        arg = ((uint64_t)d[pos] << 8) | d[pos + 1];
        pos += 2;
        if (arg <= 0xff)
            return -1;
    } else if (info == 26) {
        if (end - pos < 4)
            return -1;
        arg = ((uint64_t)d[pos] << 24) | ((uint64_t)d[pos + 1] << 16) | ((uint64_t)d[pos + 2] << 8) | d[pos + 3];
        pos += 4;
        if (arg <= 0xffff)
            return -1;
    } else if (info == 27) {
        if (end - pos < 8)
            return -1;
        arg = 0;
        for (int i = 0; i < 8; i++)
            arg = (arg << 8) | d[pos + i];
        pos += 8;
        if (arg <= 0xffffffffULL)
            return -1;
    } else {
        return -1; /* 28-30 are reserved, 31 is an indefinite length */
    }

    switch (major) {
    case 0:
    case 1:
        return pos;
    case 2:
    case 3:
        if (arg > (uint64_t)(end - pos))
            return -1;
        return pos + (Py_ssize_t)arg;
    case 4:
        if (depth >= MAX_DEPTH || arg > (uint64_t)(end - pos)) /* each item takes a byte at least */
            return -1;
        for (uint64_t i = 0; i < arg; i++) {
            pos = plain_item(d, pos, end, depth + 1);
            if (pos < 0)
                return -1;
        }
        return pos;
    default: { /* 5: map */
        Py_ssize_t key_start[MAX_MAP_PAIRS], key_len[MAX_MAP_PAIRS];
        if (depth >= MAX_DEPTH || arg > MAX_MAP_PAIRS)
            return -1;
        for (int i = 0; i < (int)arg; i++) {
            if (pos >= end || (d[pos] >> 5) > 3)
                return -1;
            const Py_ssize_t start = pos;
            pos = plain_item(d, pos, end, depth + 1);
            if (pos < 0)
                return -1;
            const Py_ssize_t len = pos - start;
            for (int j = 0; j < i; j++)
                if (key_len[j] == len && memcmp(d + key_start[j], d + start, (size_t)len) == 0)
                    return -1;
            key_start[i] = start;
            key_len[i] = len;
            pos = plain_item(d, pos, end, depth + 1);
            if (pos < 0)
                return -1;
        }
        return pos;
    }
    }
}

static PyObject *
plain(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "plain() takes bytes, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    const Py_ssize_t size = PyBytes_GET_SIZE(arg);
    const Py_ssize_t end = plain_item((const uint8_t *)PyBytes_AS_STRING(arg), 0, size, 0);
    return PyBool_FromLong(end == size);
}

#define UNTRUSTED_MAX_DEPTH 64 /* deeper limits are left to the Python walker */

/* check_untrusted_cbor's walk; 1 when it would accept, 0 when not, -1 with an exception set. */
static int
untrusted_walk(const uint8_t *d, Py_ssize_t n, PyObject *allowed_tags, Py_ssize_t max_depth)
{
    uint64_t remaining[UNTRUSTED_MAX_DEPTH]; /* items still expected by each open container */
    Py_ssize_t open = 0, i = 0;
    if (n == 0)
        return 0;
    for (;;) {
        if (i >= n)
            return 0;
        const uint8_t ib = d[i++];
        const int major = ib >> 5, ai = ib & 0x1f;
        uint64_t arg;
        if (ai < 24) {
            arg = (uint64_t)ai;
        } else if (ai < 28) {
            const Py_ssize_t size = (Py_ssize_t)1 << (ai - 24);
            if (size > n - i)
                return 0;
            arg = 0;
            for (Py_ssize_t k = 0; k < size; k++)
                arg = (arg << 8) | d[i + k];
            i += size;
        } else {
            return 0; /* reserved, indefinite length or break */
        }
        const uint64_t left = (uint64_t)(n - i);
        if (major == 7) {
            if (ai >= 25 || arg < 20 || arg > 22)
                return 0; /* floats; simple values other than false, true, null */
        } else if (major == 6) {
            PyObject *tag = PyLong_FromUnsignedLongLong(arg);
            if (tag == NULL)
                return -1;
            const int allowed = PySequence_Contains(allowed_tags, tag);
            Py_DECREF(tag);
            if (allowed <= 0)
                return allowed;
            if (open >= max_depth)
                return 0;
            remaining[open++] = 1;
            continue;
        } else if (major == 2 || major == 3) {
            if (arg > left)
                return 0;
            i += (Py_ssize_t)arg;
        } else if (major == 4 || major == 5) {
            if (major == 5 ? arg > left / 2 : arg > left) /* every item takes a byte at least */
                return 0;
            if (open >= max_depth)
                return 0;
            if (arg) {
                remaining[open++] = major == 5 ? arg * 2 : arg;
                continue;
            }
        }
        /* an item is complete: account for it in the enclosing containers */
        while (open) {
            if (--remaining[open - 1])
                break;
            open--;
        }
        if (!open)
            return i == n;
    }
}

static PyObject *
untrusted_ok(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "untrusted_ok() takes data, allowed_tags, max_depth");
        return NULL;
    }
    const Py_ssize_t max_depth = PyLong_AsSsize_t(args[2]);
    if (max_depth == -1 && PyErr_Occurred())
        return NULL;
    if (!PyBytes_Check(args[0]) || max_depth < 0 || max_depth > UNTRUSTED_MAX_DEPTH)
        Py_RETURN_FALSE; /* the Python walker takes any other case */
    const int ok = untrusted_walk((const uint8_t *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]),
                                  args[1], max_depth);
    if (ok < 0)
        return NULL;
    return PyBool_FromLong(ok);
}

static PyMethodDef methods[] = {
    {"plain", plain, METH_O,
     "plain(data: bytes) -> bool\n--\n\n"
     "True if data is one CBOR item in deterministic encoding without tags, floats or other "
     "simple values than false/true/null/undefined, whose maps have distinct integer or string "
     "keys (at most 32 pairs), nested at most 64 deep, with nothing after it."},
    {"untrusted_ok", (PyCFunction)(void (*)(void))untrusted_ok, METH_FASTCALL,
     "untrusted_ok(data: bytes, allowed_tags: frozenset[int], max_depth: int) -> bool\n--\n\n"
     "True if encoding.untrusted.check_untrusted_cbor would accept data; False for every other "
     "case (the Python walker then names what is wrong)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_plaincbor", "Deterministic-CBOR check for the TEEP decoder's usual case.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__plaincbor(void)
{
    return PyModule_Create(&module_def);
}
