"""Built-in explainers and checks of xai-auditor (import name ``auditor_plugins``).

They register through the ``auditor`` entry-point group, exactly as third-party plugins do.
"""
