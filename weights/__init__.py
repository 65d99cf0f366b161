"""The shipped models: <name>.onnx with its card <name>.json (installed as package data)."""
