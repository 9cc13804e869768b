"""Store: every event of the loop, in one DuckDB file that three kinds of process share.

    database.py     the Store: every SQL statement of the project, short transactions, the `votes` view
    lock.py         taking turns on the file across processes (writers first)
    preferences.py  votes in and out as files: import (all or nothing), TRL's preference format out
"""
