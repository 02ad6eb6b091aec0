"""The benchmarks' JSON stays JSON: what a solver's own code writes to file descriptor 1 goes to stderr."""
import os

from bench.quiet import quiet


def _solver_that_prints(x):
    os.write(1, b"HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();\n")
    return x + 1


def test_a_solver_printing_to_stdout_is_sent_to_stderr_and_stdout_comes_back(capfd):
    print("{", flush=True)
    assert quiet(_solver_that_prints, 41) == 42
    print("}", flush=True)
    out, err = capfd.readouterr()
    assert out == "{\n}\n"
    assert "tmpSolver.run()" in err


def test_stdout_comes_back_when_the_solver_raises(capfd):
    def fails():
        os.write(1, b"partial\n")
        raise RuntimeError("solver failed")
    try:
        quiet(fails)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the error was swallowed")
    os.write(1, b"after\n")
    out, err = capfd.readouterr()
    assert out == "after\n" and err == "partial\n"


def test_what_the_solver_left_in_c_stdio_buffers_goes_to_stderr_too(capfd):
    import ctypes
    libc = ctypes.CDLL(None)

    def buffered():  # printf into a file or pipe is buffered by C until a flush
        libc.printf(b"from printf\n")
    quiet(buffered)
    libc.fflush(None)
    out, err = capfd.readouterr()
    assert "from printf" not in out and "from printf" in err
