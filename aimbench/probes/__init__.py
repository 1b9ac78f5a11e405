"""Probes on frozen features: pooled feature extraction (``features``), the multi-head linear
probe (``linear``) and its hyper-parameters (``config``)."""
