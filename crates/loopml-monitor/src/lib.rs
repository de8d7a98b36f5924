//! Monitors for loopml: checks over a deployment's inference log against a reference dataset.
