"""The thread policy: torch's threads follow the cores other processes leave free, between 1 and the starting count."""

from engine.threads import ThreadPolicy


class FakeMachine:
    """A clock, an idle counter and this process's CPU time, advanced by hand; records the thread count set."""

    def __init__(self, threads: int):
        self.wall = self.idle = self.own = 0.0
        self.threads = threads

    def sample(self):
        return self.wall, self.idle, self.own

    def advance(self, seconds: float, idle_cores: float, own_cores: float) -> None:
        self.wall += seconds
        self.idle += seconds * idle_cores
        self.own += seconds * own_cores

    def policy(self, **kwargs) -> ThreadPolicy:
        def set_threads(n: int) -> None:
            self.threads = n

        return ThreadPolicy(
            read_sample=self.sample,
            get_threads=lambda: self.threads,
            set_threads=set_threads,
            enabled=True,
            clock=lambda: self.wall,
            **kwargs,
        )


def test_a_busy_neighbour_drops_to_one_thread_and_a_quiet_machine_gets_both_back():
    machine = FakeMachine(threads=2)
    policy = machine.policy(interval=2.0)
    machine.advance(2.0, idle_cores=0.1, own_cores=1.9)  # quiet: we use both cores
    assert policy.tick() == 2 and machine.threads == 2
    machine.advance(2.0, idle_cores=0.0, own_cores=1.2)  # another process took a core; our threads spin and stall
    assert policy.tick() == 1 and machine.threads == 1
    machine.advance(2.0, idle_cores=0.05, own_cores=1.0)  # still busy: stay on one thread
    assert policy.tick() == 1
    machine.advance(2.0, idle_cores=0.95, own_cores=1.0)  # the neighbour finished: a whole core sits idle
    assert policy.tick() == 2 and machine.threads == 2


def test_nothing_changes_within_an_interval_or_past_the_starting_count():
    machine = FakeMachine(threads=2)
    policy = machine.policy(interval=2.0)
    machine.advance(1.0, idle_cores=0.0, own_cores=1.0)
    assert policy.tick() == 2  # half an interval: no decision yet
    machine.advance(1.0, idle_cores=0.0, own_cores=1.0)
    assert policy.tick() == 1
    machine.advance(2.0, idle_cores=8.0, own_cores=1.0)  # a big idle machine never raises us past the start
    assert policy.tick() == 2


def test_disabled_when_the_user_chose_or_on_one_thread(monkeypatch):
    machine = FakeMachine(threads=1)
    assert not machine.policy().enabled  # one thread: nothing to move
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert not ThreadPolicy(max_threads=2, read_sample=machine.sample).enabled
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert ThreadPolicy(max_threads=2, read_sample=lambda: None).enabled is False  # no /proc/stat (not Linux)
