"""Test data builders."""

import factory
from factory.django import DjangoModelFactory

from scores.models import Score


class ScoreFactory(DjangoModelFactory):
    class Meta:
        model = Score

    user_id = factory.Sequence(lambda n: 1000 + n)
    exercise_id = factory.Sequence(lambda n: 1 + n % 100)
    correct = factory.Faker("pybool")
