"""benchmarks/work_budget.py's counting: the arithmetic it charges a stage must never exceed what the stage did."""
from benchmarks.work_budget import Shapes, Work, unique_prefix_tokens

SMOLLM2_135M = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
                "num_hidden_layers": 30, "vocab_size": 49152}


def test_a_shared_prefix_is_counted_once():
    assert unique_prefix_tokens([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9], [7]]) == 4 + 1 + 1 + 1
    assert unique_prefix_tokens([[1, 2], [1, 2]]) == 2  # the same prompt twice is prefilled once at best
    assert unique_prefix_tokens([]) == 0


def test_smollm2_weight_products_per_token():
    shapes = Shapes.of(SMOLLM2_135M)
    # q and o 576x576, k and v 576x192 (3 of 9 heads), gate and up 576x1536, down 1536x576; 30 layers
    per_layer = 2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536
    assert shapes.layer_flops == 2 * 30 * per_layer
    assert shapes.head_flops == 2 * 576 * 49152
    assert Work(layer_tokens=10, head_positions=3).flops(shapes) == 10 * shapes.layer_flops + 3 * shapes.head_flops
