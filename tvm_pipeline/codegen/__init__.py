"""Code generation: apply schedules, compile and export a library; `devicecheck` verifies the
generated GPU code with the real device compilers available here."""
