"""Independent PyTorch references: the networks and the metric as the
reference code (egracheva/epsinas) computes them, for tests only."""
