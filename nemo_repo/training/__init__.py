"""Layer 5: training (optim: megatron optimizer + LR schedule; build: one-call setup of a run;
loop, checkpoint, logging, outputs, signals). Submodules are imported explicitly: importing this
package does not import megatron."""
