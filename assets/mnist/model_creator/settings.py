"""Model parameters shared by the creator and (through task.json) its contributors."""

MODEL_NAME = "mnist_mlp"
LEARNING_RATE = 0.001
EPOCHS = 2
BATCH_SIZE = 32
