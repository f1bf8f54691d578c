"""The async event store on asyncpg: append, load a stream, read the global log without gaps."""
