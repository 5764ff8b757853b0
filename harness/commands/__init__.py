"""The workflows kharness's subcommands run beyond `run` and `boot`: each
module one command (bench, bisect, cache, debug, mutants, nightly, repro,
validate), built on the pipeline below them (session, suites, upstream:
harness/) and the infrastructure under it (options, cache, spawn, ...)."""
