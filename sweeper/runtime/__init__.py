"""The process: one interrupt policy for the main process and every worker (`interrupts`), who runs a trial and the
file locks its workers share (`workers`), the garbage collector during the trials (`heap`), and how an entry point
sets its process up (`setup`: Keras' backend, the libraries' own logging out of the terminal; called by the command
line and the worker processes only)."""
