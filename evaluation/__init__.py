"""AnyTalk evaluation suite (installed as ``anytalk_eval``): the paper's metrics and protocols, and the
synthetic ground-truth benchmark. Command line: ``anytalk-eval``."""
