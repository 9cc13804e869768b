"""bench/static_compile.py on the tiny model: each way and batch is timed, on the device asked for (the GPU run of
the CUDA-graph way waits for a lent GPU; bench/README.md, "The GPU path")."""
import pytest

from bench import static_compile


def test_each_way_and_batch_is_timed_with_its_generation_config(tiny_model_dir, capsys):
    result = static_compile.main(["--base-model", tiny_model_dir, "--tokens", "4", "--repeats", "2",
                                  "--batches", "2,3", "--ways", "dynamic,static_eager"])
    assert set(result["rows"]) == {"dynamic_b2", "dynamic_b3", "static_eager_b2", "static_eager_b3"}
    for row in result["rows"].values():
        assert len(row["seconds"]) == 2 and row["ms_per_token"] > 0
    assert result["device"] == "cpu" and "aten::" in capsys.readouterr().out  # the operator table was printed


def test_the_compiled_way_compiles_on_a_cpu_only_when_told_and_on_a_gpu_by_default(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    cpu = static_compile.generation(tokenizer, 8, "static_compiled", "cpu")
    gpu = static_compile.generation(tokenizer, 8, "static_compiled", "cuda")
    assert cpu.compile_config._compile_all_devices and cpu.cache_implementation == "static"
    assert gpu.cache_implementation == "static" and not getattr(gpu.compile_config, "_compile_all_devices", False)
    assert static_compile.generation(tokenizer, 8, "static_eager", "cpu").disable_compile


def test_an_unknown_way_is_refused_with_the_ways_it_takes(tiny_model_dir):
    with pytest.raises(SystemExit, match="--ways takes dynamic, static_eager, static_compiled"):
        static_compile.main(["--base-model", tiny_model_dir, "--ways", "fast"])
