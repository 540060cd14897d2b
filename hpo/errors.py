"""The toolkit's own error: a message for a person, shown without a traceback."""


class HpoError(Exception):
    """Bad input (study file, option, data) or a failure the user can act on.

    The message is one paragraph that names the file, the field and the allowed
    values; `hpo.run` prints it and exits non-zero without a traceback.
    """
