import random

from understudy.routing import AnsweredBy, Mode, RoutingPolicy, decide_route
from understudy.tasks import Prediction


def confident(p: float) -> Prediction:
    return Prediction(labels={"sentiment": "positive"}, probs={"sentiment": {"positive": p}})


def test_shadow_lets_the_teacher_answer_and_compares_the_student() -> None:
    route = decide_route(RoutingPolicy(Mode.SHADOW, 0.5, 0.05), confident(0.99), random.Random(0))
    assert route.answered_by is AnsweredBy.TEACHER
    assert route.compare and not route.audit


def test_cascade_answers_only_above_threshold() -> None:
    policy = RoutingPolicy(Mode.CASCADE, 0.9, 0.0)
    rng = random.Random(0)
    assert decide_route(policy, confident(0.95), rng).answered_by is AnsweredBy.STUDENT
    low = decide_route(policy, confident(0.85), rng)
    assert low.answered_by is AnsweredBy.TEACHER and low.compare


def test_without_a_threshold_the_cascade_never_trusts_the_student() -> None:
    route = decide_route(RoutingPolicy(Mode.CASCADE, None, 0.0), confident(1.0), random.Random(0))
    assert route.answered_by is AnsweredBy.TEACHER


def test_student_mode_answers_everything_and_audits_at_the_rate() -> None:
    policy = RoutingPolicy(Mode.STUDENT, 0.9, 0.25)
    rng = random.Random(1)
    routes = [decide_route(policy, confident(0.1), rng) for _ in range(4000)]
    assert all(r.answered_by is AnsweredBy.STUDENT for r in routes)
    audited = sum(r.audit for r in routes) / len(routes)
    assert 0.22 < audited < 0.28


def test_no_prediction_or_teacher_mode_goes_to_the_teacher() -> None:
    rng = random.Random(0)
    assert decide_route(RoutingPolicy(Mode.STUDENT, 0.1, 0.0), None, rng).answered_by is (
        AnsweredBy.TEACHER
    )
    teacher = decide_route(RoutingPolicy(Mode.TEACHER, 0.1, 0.0), confident(1.0), rng)
    assert teacher.answered_by is AnsweredBy.TEACHER
