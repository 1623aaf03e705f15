"""OTrP message protection: JOSE (JWS/JWE), COSE and the signer PKI."""
