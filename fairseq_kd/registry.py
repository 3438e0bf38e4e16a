"""Import every module of a sub-package so its ``@register_*`` decorators run."""
import importlib
import os


def import_all(package_name: str, package_file: str) -> None:
    """Import ``package_name.<module>`` for each ``*.py`` beside ``package_file``."""
    folder = os.path.dirname(package_file)
    for fname in sorted(os.listdir(folder)):
        if fname.endswith(".py") and not fname.startswith("_"):
            importlib.import_module(f"{package_name}.{fname[:-3]}")
