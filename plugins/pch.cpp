// Translation unit that carries the plugins' precompiled header.
