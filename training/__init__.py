"""AnyTalk trainer and evaluation suite, installed under the import name ``anytalk_training``."""
