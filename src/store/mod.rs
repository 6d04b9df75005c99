//! All SQL lives here: migrations, one writer thread with group commit, a reader.
