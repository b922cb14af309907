"""Thread settings for scoring processes: one-thread TensorFlow kernels unless the operator chose otherwise."""
import os

from core.threads import available_cpus, use_single_threaded_kernels


def test_scoring_processes_get_one_thread_kernels_and_one_inter_op_thread_per_cpu(monkeypatch):
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
    use_single_threaded_kernels()
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "1"
    assert os.environ["TF_NUM_INTEROP_THREADS"] == str(available_cpus())


def test_values_the_operator_set_win(monkeypatch):
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "4")
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "3")
    use_single_threaded_kernels()
    assert (os.environ["TF_NUM_INTRAOP_THREADS"], os.environ["TF_NUM_INTEROP_THREADS"]) == ("4", "3")


def test_available_cpus_is_at_least_one():
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
