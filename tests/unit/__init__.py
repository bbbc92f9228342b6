"""Unit tests of the kernel: pure functions of definitions, events and answers -- no
graph, no bus, no I/O -- so the whole folder runs in well under two seconds."""
