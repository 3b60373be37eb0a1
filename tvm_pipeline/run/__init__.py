"""Running artifacts: the artifact folder, local and remote (TVM RPC) runners, input feeds, and the
validate / bench / classify stages."""
