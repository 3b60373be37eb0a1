"""Frontend: read a user's ONNX file (checks, static shapes, shape subgraphs folded) and analyse it."""
