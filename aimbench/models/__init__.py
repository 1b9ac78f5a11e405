"""Networks aimbench owns: the AIM v1 trunk (``aim``), written to match Apple's checkpoints."""
