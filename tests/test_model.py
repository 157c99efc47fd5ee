import torch

from erosion.model.network import ErosionCNN, ModelConfig, count_parameters


def test_the_papers_cnn_has_1_072_818_trainable_parameters():
    assert count_parameters(ErosionCNN()) == 1_072_818


def test_a_batch_of_crops_gives_six_logits_each():
    model = ErosionCNN().eval()
    with torch.no_grad():
        assert model(torch.rand(3, 1, 150, 150)).shape == (3, 6)


def test_a_reduced_model_keeps_the_architecture():
    small = ErosionCNN(ModelConfig(input_size=64, width=0.5)).eval()
    with torch.no_grad():
        assert small(torch.rand(2, 1, 64, 64)).shape == (2, 6)
    assert count_parameters(small) < count_parameters(ErosionCNN()) / 3
