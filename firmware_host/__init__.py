"""firmware_host: the host side of the device — build it, start it, talk to it, verify it.

    from firmware_host.verify import verify
    result = verify("build/digits", "test.npz", labels=True, device="lm3s6965evb")
"""
