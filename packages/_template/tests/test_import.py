import __IMPORT__


def test_version():
    assert __IMPORT__.__version__.count(".") == 2
