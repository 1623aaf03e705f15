"""OTrP engines (sans-IO TAM and Broker/Agent), the codec choice and in-memory sessions."""
