"""The creator's training settings for this task, read from task.json in this folder.

task.json is written by the creator when it packages these assets; it carries the model name,
epochs, batch size, learning rate and how the training data is split among contributors.
"""

import json
from pathlib import Path

_SETTINGS = json.loads((Path(__file__).with_name("task.json")).read_text())

MODEL_NAME: str = _SETTINGS["model"]
EPOCHS: int = _SETTINGS["epochs"]
BATCH_SIZE: int = _SETTINGS["batch_size"]
LEARNING_RATE: float = _SETTINGS["learning_rate"]
DATA: dict = _SETTINGS["data"]
ALL: dict = _SETTINGS  # with, for a creator's own model, its architecture description
