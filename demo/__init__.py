"""The main job: train, attack, extract, analyse and report on the embedded digits default."""
