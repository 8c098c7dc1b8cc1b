"""The one exception type the test bed raises."""


class TestbedError(RuntimeError):
    """A test-bed step failed: fetching, building images, or running the guest."""

    # Not a test class, whatever its name says.
    __test__ = False
