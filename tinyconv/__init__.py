"""tinyconv: int8 CNNs on microcontrollers, verified bit for bit over a serial link."""
