"""The command line: `redirector serve`, `poll`, `explain`, `mirrors`, `check-mirror` and more."""
