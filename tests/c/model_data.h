/* A stand-in for the generated model_data.h, for testing the protocol engine alone: shapes
 * chosen so one INFER frame spans two COBS blocks (320 > 254 bytes). */
#ifndef MODEL_DATA_H
#define MODEL_DATA_H

#define TC_MODEL_NAME "stub"
#define TC_MODEL_HASH 0x0123456789abcdefULL
#define TC_REQUANT_FIXED 0
#define TC_REQUANT_FLOAT 1
#define TC_REQUANT_MODE TC_REQUANT_FIXED
#define TC_ARENA_SIZE 1024
#define TC_INPUT_SIZE 320
#define TC_OUTPUT_SIZE 10
#define TC_INPUT_RANK 3
#define TC_INPUT_SHAPE_INIT {20, 16, 1}
#define TC_OUTPUT_RANK 1
#define TC_OUTPUT_SHAPE_INIT {10}
#define TC_INPUT_SCALE_BITS 0x3c000000UL
#define TC_INPUT_ZERO_POINT (-128)
#define TC_OUTPUT_SCALE_BITS 0x3d800000UL
#define TC_OUTPUT_ZERO_POINT 5
#define TC_NUM_LAYERS 1
#define TC_TOTAL_MACS 3200

#endif
