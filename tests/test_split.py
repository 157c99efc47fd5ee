import random

from erosion.core.split import FRACTIONS, SPLITS, assign_splits, split_of

PATIENTS = [f"patient-{i:05d}" for i in range(1000)]


def test_split_proportions_on_1000_patients_within_4_points():
    splits = assign_splits(PATIENTS, seed=0)
    for name, fraction in zip(SPLITS, FRACTIONS, strict=True):
        share = sum(s == name for s in splits.values()) / len(PATIENTS)
        assert abs(share - fraction) < 0.04, (name, share)


def test_every_row_of_a_patient_lands_in_one_split():
    rows = [(p, visit) for p in PATIENTS[:200] for visit in range(4)]
    by_patient = {}
    for patient, _ in rows:
        by_patient.setdefault(patient, set()).add(split_of(patient, seed=0))
    assert all(len(s) == 1 for s in by_patient.values())


def test_split_does_not_depend_on_row_order():
    shuffled = PATIENTS[:]
    random.Random(1).shuffle(shuffled)
    assert assign_splits(shuffled, seed=0) == assign_splits(PATIENTS, seed=0)


def test_adding_patients_moves_no_old_patient():
    before = assign_splits(PATIENTS[:500], seed=0)
    after = assign_splits(PATIENTS, seed=0)
    assert all(after[p] == s for p, s in before.items())


def test_the_seed_changes_the_split():
    a, b = assign_splits(PATIENTS, seed=0), assign_splits(PATIENTS, seed=1)
    assert sum(a[p] != b[p] for p in PATIENTS) > 300
