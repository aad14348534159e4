"""Layer 5: training (step: StepRunner, one optimizer step or evaluation pass; optim: megatron
optimizer + LR schedule; build: one-call setup of a run; loop, checkpoint, logging, outputs,
last_visit, signals). Submodules are imported explicitly: importing this package does not import
megatron."""
