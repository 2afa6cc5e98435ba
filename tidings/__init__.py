"""Tidings: the shell package (app factory, config, db, CLI, API, UI).

`create_app` is imported lazily so that domain packages can use `tidings.db` and
`tidings.errors` without pulling in Flask.
"""

__all__ = ["create_app"]


def __getattr__(name):
    if name == "create_app":
        from tidings.app import create_app

        return create_app
    raise AttributeError(name)
