"""The creator's training settings for this task, read from task.json in this folder.

task.json is written by the creator when it packages these assets; it carries the model name,
epochs, batch size, learning rate, optimizer, the round's strategy settings (``round``) and how
the training data is split among contributors.
"""

import json
from pathlib import Path

SETTINGS: dict = json.loads((Path(__file__).with_name("task.json")).read_text())

MODEL_NAME: str = SETTINGS["model"]
EPOCHS: int = SETTINGS["epochs"]
BATCH_SIZE: int = SETTINGS["batch_size"]
LEARNING_RATE: float = SETTINGS["learning_rate"]
DATA: dict = SETTINGS["data"]
ALL: dict = SETTINGS  # with, for a creator's own model, its architecture description
