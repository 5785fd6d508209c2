"""Which real datasets the test run can load (tests skip, with a reason, the ones it cannot)."""


def dataset_available(name: str) -> bool:
    try:
        from snnlearn.data import load_dataset

        load_dataset(name, "test", download=False)
        return True
    except Exception:
        return False


def mnist_available() -> bool:
    return dataset_available("mnist")
