//! Store unit tests on fresh file databases in temporary directories.
