// Greedy decoding with llama.cpp and LoRA adapters, printing each step's chosen token,
// its logit and the runner-up's, one JSON object per line. Built by scripts/lora-reference.sh
// against the llama.cpp of the llama-cpp-python sdist; not part of CI.
// Usage: lora_greedy MODEL N_PREDICT PROMPT_IDS(comma-separated) [ADAPTER SCALE]...
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 4 || (argc - 4) % 2 != 0) {
        fprintf(stderr, "usage: %s MODEL N_PREDICT IDS [ADAPTER SCALE]...\n", argv[0]);
        return 2;
    }
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 1024;
    cp.n_batch = 1024;
    cp.n_threads = cp.n_threads_batch = 2;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    int n_ad = (argc - 4) / 2;
    struct llama_adapter_lora *ads[8];
    float scales[8];
    for (int i = 0; i < n_ad && i < 8; i++) {
        ads[i] = llama_adapter_lora_init(model, argv[4 + 2 * i]);
        if (!ads[i]) return 1;
        scales[i] = strtof(argv[5 + 2 * i], NULL);
    }
    if (n_ad > 0 && llama_set_adapters_lora(ctx, ads, n_ad, scales) != 0) return 1;
    int n_predict = atoi(argv[2]);
    llama_token ids[1024];
    int n = 0;
    for (char *p = strtok(argv[3], ","); p && n < 1024; p = strtok(NULL, ",")) ids[n++] = atoi(p);
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_batch batch = llama_batch_get_one(ids, n);
    llama_token tok;
    for (int step = 0; step < n_predict; step++) {
        if (llama_decode(ctx, batch) != 0) return 1;
        const float *l = llama_get_logits_ith(ctx, -1);
        int a = 0, b = -1;
        for (int i = 1; i < n_vocab; i++) {
            if (l[i] > l[a]) { b = a; a = i; } else if (b < 0 || l[i] > l[b]) b = i;
        }
        printf("{\"id\": %d, \"logit\": %.6f, \"top2\": %d, \"top2_logit\": %.6f}\n", a, l[a], b, l[b]);
        tok = a;
        batch = llama_batch_get_one(&tok, 1);
    }
    return 0;
}
