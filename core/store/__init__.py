"""Store: every event of the loop, in one DuckDB file that three kinds of process share. All of the project's SQL
lives in this package (a test holds every other module to it), each statement with its parameters bound.

    database.py     the Store: the SQL of every read and write, short transactions, the `votes` view
    schema.py       the tables (DDL), created or migrated when a Store opens the file
    imports.py      the bulk import's SQL: stage a file's rows aside, then merge them in one short transaction
    lock.py         taking turns on the file across processes (writers first)
    preferences.py  votes in and out as files: import (all or nothing), TRL's preference format out
"""
