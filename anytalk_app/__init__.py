"""The AnyTalk application: the ``anytalk`` command line and the demo (which reads the repository's ``assets/``).

Built on the library ``anytalk_core``, which never imports this package."""
