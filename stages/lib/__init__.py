"""Components the stage recipes call. None of them reads params.yaml: they take plain arguments."""
