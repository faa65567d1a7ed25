"""Hints in steps, for every exercise: first the idea, then the tools, then the trap to avoid — never the code.

In a notebook::

    course_utils.checks.hint("soft_target_loss")      # hint 1 of 3; call again for the next one
    course_utils.checks.hint("soft_target_loss", 3)   # a given step

A test (``tests/test_nbtool.py``) makes sure no hint contains a line of the solution.
"""
from __future__ import annotations

__all__ = ["HINTS", "hint"]

HINTS: dict[str, tuple[str, ...]] = {
    # ------------------------------------------------------------------------------------------ notebook 01
    "stable_softmax": (
        "Softmax does not change if you add the same number to every logit of a row. Choose that number so that "
        "the largest exponent is exp(0).",
        "Work along the last axis only: each row has its own maximum. Reductions that keep the axis "
        "(keepdim=True) broadcast back against the row.",
        "The temperature divides the logits before anything else, and the division by the sum comes last.",
    ),
    "entropy": (
        "Entropy is the expected surprise: the probability-weighted average of −log p over the classes.",
        "log(0) is −inf and 0 · (−inf) is NaN, but the limit of p·log p at 0 is 0. torch has a function that "
        "computes x·log(y) with exactly that convention.",
        "Sum over the last axis only, so that a batch of distributions gives one entropy each.",
    ),
    # ------------------------------------------------------------------------------------------ notebook 02
    "soft_target_loss": (
        "Both distributions are softened by the same T; the loss is the forward KL, the teacher's distribution "
        "first, and is scaled by T² so that its gradient keeps its size when you change T.",
        "torch.nn.functional.kl_div expects the *student's* log-probabilities as its first argument and the "
        "teacher's distribution as its target (probabilities, or log-probabilities with log_target=True).",
        "Average over the examples, not over examples × classes: read the reduction options of kl_div. And never "
        "take the log of a softmax — compute log-probabilities in one step, or large logits give −inf.",
    ),
    "kd_logit_gradient": (
        "Write KL(p ‖ q) as Σ p log p − Σ p log q; only the second sum depends on z, through q = softmax(z / T).",
        "Differentiate log softmax: ∂ log q_j / ∂ z_i = (δ_ij − q_i) / T. Then use that the p_j sum to 1.",
        "Check your formula numerically before coding it: autograd or a finite difference on one logit.",
    ),
    "distillation_loss": (
        "Two terms: the ordinary cross-entropy with the true labels, at temperature 1, and your soft-target loss "
        "at temperature T. alpha_kd is the weight of the KD term.",
        "torch.nn.functional.cross_entropy takes raw logits and integer labels and averages over the batch.",
        "The weights are (1 − alpha_kd) and alpha_kd; the T² belongs to the KD term only.",
    ),
    # ------------------------------------------------------------------------------------------ notebook 03
    "compute_loss": (
        "The batch holds the inputs and the labels; both models get the same inputs, but only the student may "
        "build a graph for backpropagation.",
        "Call the student and the teacher with every key of the batch except 'labels'; wrap the teacher in "
        "torch.no_grad(). Each returns an output object whose .logits you need.",
        "Mix the cross-entropy and T² · KL(p ‖ q) with alpha_kd, as in notebook 02. The Trainer asks for "
        "(loss, outputs) when return_outputs is true, and for the loss alone otherwise.",
    ),
    "init_student": (
        "A student is a model of the teacher's class with fewer encoder layers; everything else (embeddings, "
        "pooler, classifier) is copied as it is.",
        "Copy the teacher's config, change the number of hidden layers, and build the model from it. The "
        "teacher's state_dict names each layer's weights 'bert.encoder.layer.<index>.…'.",
        "Renumber the kept layers 0, 1, 2, … in the student's state dict, drop the others, and copy the tensors "
        "(clone) so that training the student never changes the teacher.",
    ),
    # ------------------------------------------------------------------------------------------ notebook 04
    "make_hint_projection": (
        "The student's hidden states are narrower than the teacher's; a learned linear map makes them "
        "comparable, and it is trained together with the student.",
        "torch.nn has a layer that maps vectors of one width to vectors of another.",
    ),
    "hint_loss": (
        "Project the student's hidden states into the teacher's width, then measure the squared distance to the "
        "teacher's states.",
        "The teacher is a target, not something to train: no gradient may flow into its states.",
        "Padding tokens are not text: average over the real tokens only (the attention mask says which), and "
        "over the features of each.",
    ),
    "map_layers": (
        "Each student layer gets one teacher layer; a student deeper than its teacher has no valid map.",
        "'uniform' spreads the student's layers evenly over the teacher's depth (integer division); 'last' "
        "aligns the student's last layers with the teacher's last ones.",
        "Layers are numbered from 1 here; index 0 is the embedding output, added only when asked for.",
    ),
    # ------------------------------------------------------------------------------------------ notebook 05
    "causal_kd_loss": (
        "A causal LM's logits at position t predict the token at t + 1: align logits and labels before "
        "comparing them.",
        "Positions whose label is -100 (prompt, padding) do not count, for the cross-entropy and for the KD term.",
        "On the remaining positions, combine CE (T = 1) and T² · KL(p ‖ q) averaged over positions with "
        "alpha_kd, as for a classifier.",
    ),
    "sft_example": (
        "The model reads the prompt and the response; it is trained to write only the response, and to stop.",
        "The labels list has one entry per input token; -100 tells the loss to ignore a position.",
        "End the sequence with the end-of-sequence token, in the inputs and in the labels.",
    ),
    "rouge_l": (
        "ROUGE-L compares the longest common subsequence of words (in order, not necessarily adjacent) with the "
        "lengths of the two texts.",
        "Lower-case the texts and keep word characters only (a regular expression does it); the LCS comes from a "
        "dynamic-programming table over the two word lists.",
        "Precision divides the LCS by the candidate's length, recall by the reference's; F1 is their harmonic "
        "mean. Empty texts score 0.",
    ),
    # ------------------------------------------------------------------------------------------ notebook 06
    "expected_calibration_error": (
        "Group predictions by confidence (the top probability) into equal-width bins; in each bin compare the "
        "accuracy with the mean confidence.",
        "Weight each bin's gap by its share of the examples, and skip empty bins.",
        "Bins are right-closed: a confidence of exactly 1 belongs to the last bin, and 1/n_bins to the first.",
    ),
    "measure_latency": (
        "A fair timing runs the model a few times untimed first (warm-up), then many times, and reports the median.",
        "Fix the number of CPU threads for the measurement and restore it afterwards, even if the model raises; "
        "run in eval mode without autograd.",
        "Use a monotonic high-resolution clock (the time module has one for benchmarks) and report milliseconds.",
    ),
    # ------------------------------------------------------------------------------------------ notebook 07
    "ensemble_soft_targets": (
        "Two ways to combine teachers: average their distributions (a mixture), or average their logits and "
        "then take one softmax (a normalised geometric mean).",
        "The teachers are the first axis of the (K, N, C) tensor; the classes are the last.",
        "Apply the temperature wherever a softmax is taken, and reject an unknown method.",
    ),
    "mutual_learning_losses": (
        "Each student learns from the labels and from its peer, exactly like distillation from a teacher.",
        "Within one student's loss the peer is a constant target: no gradient may flow into it through this term.",
        "Each loss is (1 − alpha_kd) · CE + alpha_kd · T² · KL(peer ‖ own), averaged over the batch.",
    ),
    # ------------------------------------------------------------------------------------------ notebook 08
    "on_policy_loss": (
        "Only what the student wrote is graded: the positions from the end of the prompt up to its first "
        "end-of-sequence token — which is also the padding token here, so find it by position, not by id.",
        "The logits at position t predict token t + 1: the logits that score a completion token sit one position "
        "earlier. Shift the logits and the mask against each other, the same way for student and teacher.",
        "The divergence itself is generalized_jsd_loss with that mask. The teacher is a target, not a learner.",
    ),
    "score_tokens": (
        "The teacher grades each written token by the log-probability it gives that token, given everything "
        "before it.",
        "One forward pass gives logits for every position at once; log_softmax over the vocabulary and "
        "Tensor.gather pick one entry per position.",
        "Position t's logits predict token t + 1, so the first token gets no score and the last logits none to "
        "score. The teacher is never trained: no gradients.",
    ),
}

_shown: dict[str, int] = {}


def hint(exercise: str, step: int | None = None) -> str:
    """Print the next hint for ``exercise`` (or hint number ``step``, from 1) and return it.

    Raises:
        ValueError: an unknown exercise name (the message lists them) or a step out of range.
    """
    if exercise not in HINTS:
        raise ValueError(f"no hints for {exercise!r}; exercises with hints: {', '.join(sorted(HINTS))}")
    steps = HINTS[exercise]
    if step is None:
        step = min(_shown.get(exercise, 0) + 1, len(steps))
    if not isinstance(step, int) or not 1 <= step <= len(steps):
        raise ValueError(f"{exercise!r} has hints 1 to {len(steps)}, got {step!r}")
    _shown[exercise] = max(_shown.get(exercise, 0), step)
    more = "" if step == len(steps) else f"  (hint({exercise!r}) again for hint {step + 1})"
    text = f"Hint {step}/{len(steps)} for {exercise}: {steps[step - 1]}{more}"
    print(text)
    return text
