"""Framework bridges: a PyTorch module or a Keras model exported to ONNX and
scored in one call (torch.py, keras.py; public as epsinas_onnx.torch and
epsinas_onnx.keras). torch and tf2onnx are imported only when called.
"""
