"""Results of long experiments that notebooks read: ``roar-<fill>.json``, written by ``python -m smoothgrad_lib roar``
(see ``smoothgrad_lib.roar.stored_grid``). Each file records the command, the code version and the timings."""
