"""OTrP wire encodings: the JSON form and the CBOR label/type tables."""
