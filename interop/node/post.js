// One confirmable POST with node-coap (npm `coap`), for the teep-coap interop driver.
//
//   node post.js URI INFILE OUTFILE CONTENT_FORMAT
//
// Sends INFILE's bytes (empty = ProcessConnect) with the given Content-Format and Accept, writes
// the answer's payload to OUTFILE, prints the response code on stdout ("2.04") and exits 0 when the
// code is 2.xx. node-coap reassembles Block2 answers itself but never splits a request into Block1
// blocks (it sends one datagram): the Agent's messages in this session fit in one (< 1 KiB), the
// TAM's Update comes back block-wise.
'use strict'
const coap = require('coap')
const fs = require('fs')

const [uri, infile, outfile, cf] = process.argv.slice(2)
if (!uri || !infile || !outfile || !cf) {
  console.error('usage: node post.js URI INFILE OUTFILE CONTENT_FORMAT')
  process.exit(64)
}
const body = fs.readFileSync(infile)
const url = new URL(uri)
const timer = setTimeout(() => { console.error('timeout: no answer in 20 s'); process.exit(3) }, 20000)
const req = coap.request({
  hostname: url.hostname,
  port: Number(url.port || 5683),
  pathname: url.pathname,
  method: 'POST',
  confirmable: true
})
const format = Number(cf)
if (body.length > 0) req.setOption('Content-Format', format)
req.setOption('Accept', format)
req.on('response', (res) => {
  clearTimeout(timer)
  const chunks = []
  res.on('data', (c) => chunks.push(c))
  res.on('end', () => {
    fs.writeFileSync(outfile, Buffer.concat(chunks.length ? chunks : [res.payload || Buffer.alloc(0)]))
    console.log(res.code)
    process.exit(res.code.startsWith('2.') ? 0 : 1)
  })
})
req.on('error', (err) => { clearTimeout(timer); console.error('error: ' + err.message); process.exit(2) })
req.end(body)
