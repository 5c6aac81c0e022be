import rap_share


def test_version():
    assert rap_share.__version__.count(".") == 2
