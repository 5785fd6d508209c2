"""Which real datasets the test run can load (tests skip, with a reason, the ones it cannot)."""


def mnist_available() -> bool:
    try:
        from snnlearn.data import load_dataset

        load_dataset("mnist", "test", download=False)
        return True
    except Exception:
        return False
